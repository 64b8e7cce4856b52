"""The fork's training-log lines about sparsity (sgd_solver.cpp 120-153, solver.cpp 259-262).

Each sparsity message is a *two-line* glog message: the title (with its leading spaces) ends in a newline,
so the log prefix sits on the title line and the values follow on the next raw line, one per learnable
param in net order, each followed by a TAB. Numbers use C++'s default ostream format (6 significant
digits, ``%g``)::

    I... sgd_solver.cpp:120]     Element Sparsity %: 
    0\t0\t0\t0\t0.462963\t0\t
    ...
    I... sgd_solver.cpp:153]       Block Sparsity %: 
    (3,2):0;\t\t(9,3):0;\t\t\t\t
"""
from __future__ import annotations

from ..weights_matrix import block_sparsity, check_block, column_sparsity, element_sparsity, row_sparsity

TITLES = ("    Element Sparsity %: ", "     Column Sparsity %: ", "        Row Sparsity %: ",
          "      Block Sparsity %: ")


def fmt(x: float) -> str:
    """C++ ``ostream << float`` with the default precision (6 significant digits)."""
    return "%g" % x


def sparsity_messages(params, threshold: float) -> list[str]:
    """The four messages ``title + "\\n" + values`` for the learnable params (ParamInfo list), in net order."""
    elem, col, row, blk = [], [], [], []
    for info in params:
        t = info.tensor
        elem.append(fmt(element_sparsity(t, threshold)) + "\t")
        col.append(fmt(column_sparsity(t)) + "\t")
        row.append(fmt(row_sparsity(t)) + "\t")
        parts = []
        for b in info.spec.block_group_lasso:
            x, y = int(b.xdimen), int(b.ydimen)
            if check_block(t.shape, y, x) is None:
                parts.append(f"({x},{y}):{fmt(block_sparsity(t, y, x))};")
            else:  # refused at solver set-up; never reached through the Regularizer
                parts.append(f"({x},{y}):nan;")
        blk.append("".join(parts) + "\t")
    return [TITLES[0] + "\n" + "".join(elem), TITLES[1] + "\n" + "".join(col),
            TITLES[2] + "\n" + "".join(row), TITLES[3] + "\n" + "".join(blk)]


def columns_line(params) -> str:
    """A label line logged before the four messages (its own glog line, so the fork's lines stay as they are
    for parse_log.py and the fork's tools): which learnable param each TAB-separated value belongs to."""
    names = " ".join(f"{info.layer_name}[{info.index}]" for info in params)
    return f"    (the % values below: one per learnable param, in this order: {names})"


def regularization_line(term: float, smoothed_loss: float) -> str:
    """``    Total regularization terms: <T> loss+regular. : <T + smoothed loss>`` (solver.cpp 262)."""
    return f"    Total regularization terms: {fmt(term)} loss+regular. : {fmt(term + smoothed_loss)}"

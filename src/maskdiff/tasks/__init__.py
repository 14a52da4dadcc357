"""Tasks with exact answers, where the order in which a model fills the answer matters: their generators,
their formats (prompt/response rows, infilling templates) and their checkers (``sudoku``)."""

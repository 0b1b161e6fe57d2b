"""The paper's auxiliary-task and training-scheme studies: ``grid`` (the grid of training runs, resumable and
shared between workers) and the report built from their saved results: ``statistics`` (numbers), ``claims`` (the
paper's claims the report judges), ``markdown`` (text), ``plots`` (figures) and ``report`` (writes them together);
``pilots`` reads one run's measurements (``tcdcn study --inspect``), on which configs/studies/base.yaml was chosen.

The figures need matplotlib, installed with the optional extra ``tcdcn[studies]``; ``tcdcn study`` says so in one
line when it is missing."""

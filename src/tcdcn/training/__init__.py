"""Training by the alternating algorithm of Sec. 3.3: ``objective`` (Eq. 9 term by term), ``task_covariance``
(Eq. 12), ``task_coefficients`` (Eq. 13-14 and task-wise early stopping), ``schedule`` (learning rate),
``distributed`` (torchrun process groups), ``transfer`` (starting from a trained model), ``validation`` (the
trainer's scores through ``tcdcn.evaluation.metrics``) and ``trainer`` (the epoch loop)."""

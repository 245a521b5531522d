"""The whole job: training -> conversion -> fixed point -> verify, its variants and reports."""

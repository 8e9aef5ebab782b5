"""pytest set-up shared by the package tests and the nbval run.

Notebook kernels inherit this environment: FAST mode, and one torch thread per
kernel because two notebooks run side by side on a 2-core machine.
"""
import os

os.environ.setdefault("MOBILEUNET_FAST", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")

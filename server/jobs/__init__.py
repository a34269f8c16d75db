"""Training jobs: the runner (a thread per job, HE slots), its link to the Train stream, and pool views."""

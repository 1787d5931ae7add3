"""What runs inside FLARE, at a site or on the server: the executor, the workflow and aggregator,
the step balancer and the privacy filters. Depends on :mod:`fedgin.seg` only; this and ``seg`` are
the code a job ships in ``app/custom``.
"""

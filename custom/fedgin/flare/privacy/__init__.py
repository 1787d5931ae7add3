"""Privacy of what leaves a site: a differentially private filter for weight diffs, its accounting,
the per-site privacy record, and job-config entries for FLARE's own privacy filters.

Modules:
    accounting: (epsilon, delta) of repeated Gaussian releases (Opacus's RDP accountant).
    ledger: the site's lifetime record in its ``local/`` folder, shared by the filter and the executor.
    gaussian: :class:`~fedgin.flare.privacy.gaussian.GaussianPrivacy`, the clip-and-noise DXO filter.
    filters: :func:`~fedgin.flare.privacy.filters.privacy_filter_config` for job configs.
"""

"""Running a federation: the FLARE simulator, POC mode, startup kits (provisioning), admin work,
a participant's site policy, HE keys, and building the jobs they run."""

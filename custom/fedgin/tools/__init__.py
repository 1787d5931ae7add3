"""Tools around the federation, run on a researcher's or operator's machine, never shipped to sites:
the command line, simulator and POC launchers, provisioning and admin, experiments, dataset
converters, phantoms, reports and CPU sharing.
"""

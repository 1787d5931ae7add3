"""Tools around the federation, run on a researcher's or operator's machine, never shipped to sites.

One room per kind of user: :mod:`~fedgin.tools.federation` (running a federation),
:mod:`~fedgin.tools.trained_model` (using a trained model), :mod:`~fedgin.tools.data` (preparing
data) and :mod:`~fedgin.tools.study` (studies); the command line (:mod:`fedgin.tools.cli`) and a
few modules they share sit here. Jobs that name a test double ship this file with
:mod:`fedgin.tools.testing`, so it imports nothing.
"""

"""Trainers: separate processes that write run folders (see ``train.runs``)."""

"""Trainers: separate processes that write run folders (see ``animegan.runs``)."""

"""Translation: an encoder–decoder.

Everything specific to the task lives in this folder; task.py is what the stages call.
"""

"""Text classification (sentiment, topics): a pooled encoder and a linear head.

Everything specific to the task lives in this folder; task.py is what the stages call.
"""

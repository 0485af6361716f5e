"""
What handler authors use: the command table, argument binding, every reply
string, and loading command sets (``--commands``).  Public names are
re-exported from :mod:`commandproto`.
"""

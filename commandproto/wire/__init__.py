"""
The wire: the line codec (framing, limits, encoding) and the helpers both
sides share (addresses, endpoint errors).  Imports nothing else of the package.
"""

"""`attrib demo`: the whole job offline on bundled data."""

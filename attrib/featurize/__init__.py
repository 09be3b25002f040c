"""attrib/featurize"""

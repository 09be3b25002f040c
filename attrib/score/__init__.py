"""attrib/score"""

"""meshlearn.fl"""

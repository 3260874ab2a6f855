"""meshlearn.sim"""

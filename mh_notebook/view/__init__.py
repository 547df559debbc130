"""The view: HTML and text from a snapshot, the ipywidgets panel, inline media.

The only layer that imports IPython or ipywidgets.
"""

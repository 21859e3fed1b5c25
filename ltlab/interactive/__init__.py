"""Live views for JupyterLab: ipywidgets that redraw figures in place as a knob moves."""

"""Code that runs INSIDE the sandbox: stdlib + IPython only, nothing from the rest of Cellbox."""

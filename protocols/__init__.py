"""Built-in evaluation protocol plugins, registered under `wsolbench.protocols`."""

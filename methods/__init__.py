"""Built-in WSOL method plugins (one method per module), registered under `wsolbench.methods`."""

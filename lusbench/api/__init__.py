"""The plugin API: hook specifications, the plugin manager, registries and spec strings."""

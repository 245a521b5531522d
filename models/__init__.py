"""Network definitions and a registry by name (installed as na_deploy.models)."""

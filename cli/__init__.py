"""The click CLI (installed as na_deploy.cli)."""

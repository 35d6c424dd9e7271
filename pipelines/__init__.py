"""Prefect flows and deployments that run transformer_pl.stages."""

"""The HTTP resources, one module per resource group."""

"""Who may do what: roles and the API tokens that carry them."""

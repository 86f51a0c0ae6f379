"""Security: password policy and hashing, users and roles (the API's JWT/RBAC build on these)."""

"""The guide's recovery procedures: service and emergency recovery, and rebuilding tasks from logs."""

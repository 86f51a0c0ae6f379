"""The operations guide's log and performance analysis, over the JSON logs ORCH writes.

``jsonlogs`` reads log files (rotated and gzipped ones too) tolerating malformed lines, ``logs`` answers
the guide's error-pattern questions, ``performance`` its per-endpoint response times, ``render`` turns
both into text for a terminal and markdown (with a chart) for Prefect artifacts; ``sources`` knows
where this installation's logs are.
"""

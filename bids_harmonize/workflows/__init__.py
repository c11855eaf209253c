"""The Nipype graph builders (init_*_wf): a workflow from explicit arguments, nothing run.

What reads the RunConfig, chooses the bundles and runs the graph is the application layer above,
bids_harmonize/levels/.
"""

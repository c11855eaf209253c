"""The application layer: what runs a level, above the graph builders of workflows/.

The participant and group runners, which model bundle harmonizes which contrast, group training,
the scheduler plugins, and the reports and export a run ends with. They take a RunConfig; the
builders and everything below them take explicit arguments. See docs/architecture.md.
"""

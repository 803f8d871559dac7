"""What ``workflows/build.py`` writes, by part.

- ``node_types``: the node types the workflows use, as /object_info describes them
- ``graph``: Node, Group, Workflow and the canvas layout
- ``formats``: one Workflow as UI-format and as API-format JSON
- ``clips``, ``model_files``: the sample clips and prompts, the model file names
- ``parts``: the nodes the SD and Wan graphs share; ``sd``, ``wan``: the workflows
- ``notes``: the text of each workflow's Read-me Note
- ``shipped``: the list of workflows, their file paths, ``resize`` for tests and the demo

``build.py`` loads this folder by path as the package ``fatezero_workflow_builder``: it runs
as a script or is loaded by path (tests/workflow_files.py), and ``builder`` is a PyPI name.
Plain Python, no ComfyUI import.
"""

"""Looking at the data: pictures of grasps (MuJoCo's offscreen renderer), a browser viewer, the dataset card.

- :mod:`dga_engine.viz.scene`: the filter's scene with the hand's visual meshes and the object's mesh;
- :mod:`dga_engine.viz.render`: one grasp or a grid of grasps to PNG, optionally coloured by verdict;
- :mod:`dga_engine.viz.select`: accepted grasps, rejects or candidates of a dataset, each with its verdict;
- :mod:`dga_engine.viz.viewer`: ``dga-engine view``, a viser app on 127.0.0.1;
- :mod:`dga_engine.viz.card`: ``dga-engine card``, the dataset's README.md for the Hugging Face Hub, with figures.
"""

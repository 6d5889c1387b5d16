"""Sample data shipped with napari-cardiac-motion (installed as ``napari_cardiac_motion.sample_data``)."""

"""Face detector backends (BlazeFace, MTCNN, SCRFD, MediaPipe) behind one interface, the face-mesh
landmark refiner, and the registry that builds them from the ``track`` config."""

"""Host-side packaging for a device: the bundle (models, proof, build script) and the files DeepStream, Triton and
jetson-inference read. It stands on deploy/ and is never copied onto the device; deploy/ is, as it is."""

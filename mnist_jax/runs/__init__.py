"""The run folder and everything written in it: the folder's owner (`RunDir`), its lock,
checkpoints, atomic writes, TensorBoard event files and the learning-curve figure."""

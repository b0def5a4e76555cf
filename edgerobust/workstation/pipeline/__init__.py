"""The compress pipeline: the first stage (prepare), the stages after it (stages), the target profile's choices (target) and the stages composed into one bundle folder (build)."""

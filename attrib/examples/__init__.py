"""Small real tasks built offline from data that ships inside installed packages: the
handwritten digits of scikit-learn and the text of Python's `pydoc_data.topics`. Used by
`attrib demo`, the quality benchmark and tests."""

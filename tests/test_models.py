"""Model preparation: the GGUF conversion that starts every run of the embedded default."""

from __future__ import annotations

import gguf
from repairrl.models.loading import embedded_gguf_path, parse_gguf_once


def test_gguf_is_parsed_once_per_file_inside_the_block_and_gguf_is_restored_after():
    path = embedded_gguf_path()
    reader_class, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    with parse_gguf_once():
        first = gguf.GGUFReader(path)
        assert gguf.GGUFReader(str(path)) is first  # the same file, however it is named
        llama = gguf.MODEL_ARCH.LLAMA
        assert gguf.get_tensor_name_map(llama, 30) is gguf.get_tensor_name_map(llama, 30)
        assert gguf.get_tensor_name_map(llama, 2) is not gguf.get_tensor_name_map(llama, 30)
    assert gguf.GGUFReader is reader_class and gguf.get_tensor_name_map is name_map
    assert gguf.GGUFReader(path) is not first


def test_converted_embedded_model_loads_and_tokenizes(embedded_model_dir):
    from repairrl.models.loading import resolve_model_path
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model_path(embedded_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    ids = tokenizer("def add(a, b):")["input_ids"]
    assert tokenizer.decode(ids) == "def add(a, b):"
    assert model.config.num_hidden_layers == 30 and model.num_parameters() == 134515008

# The fuzz harnesses, one per reader: fuzz/<name>.cpp defines LLVMFuzzerTestOneInput, its seeds are
# fuzz/corpus/<name>/, its regression inputs tests/data/fuzz/<name>/ and its dictionary, when it
# has one, fuzz/dict/<name>.dict. Read by fuzz/CMakeLists.txt (both builds) and scripts/fuzz.sh.
set(CTSR_FUZZ_HARNESSES safetensors npy nifti torch_checkpoint torch_pickle train_config pairs_csv cache_entry
    checkpoint_info dicom)

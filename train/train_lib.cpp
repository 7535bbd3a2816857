// Anchors ctsr_train_lib, the training library (train/*.cpp), so the target exists even while a
// checkout holds no other training source; it defines nothing.

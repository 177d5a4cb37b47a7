"""The whole workflow on the embedded digits: data -> model -> train -> test -> save -> deploy.

Run: python examples/quickstart.py [--epochs N] [--out FOLDER]
"""

import argparse
from pathlib import Path

import mlx.core as mx
import mlx.optimizers as optim

import mlxvision as mv
from mlxvision.data import DataLoader, Digits
from mlxvision.data import transforms as T
from mlxvision.export import export_mlxfn, load_mlxfn

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--epochs", type=int, default=20)
parser.add_argument("--out", default="quickstart-output")
args = parser.parse_args()
out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)
mx.random.seed(0)

# 1. Data: augmentation for training, plain normalization for testing (NHWC batches).
normalize = [T.ToTensor(), T.Normalize(Digits.mean, Digits.std)]
train_set = Digits(train=True, transform=T.Compose([T.RandomCrop(8, padding=1), *normalize]))
test_set = Digits(train=False, transform=T.Compose(normalize))
train_loader = DataLoader(train_set, batch_size=64, shuffle=True, drop_last=True)
test_loader = DataLoader(test_set, batch_size=128)
print(f"Data: {len(train_set)} training and {len(test_set)} test images of {train_set.image_shape}")

# 2. Model: the tutorial's CNN, sized for 8x8 grey images.
model = mv.create_model("simple_cnn", num_classes=10, in_channels=1, input_size=8)

# 3. Train with a compiled step (Adam, cosine-decayed learning rate).
schedule = optim.cosine_decay(1e-3, args.epochs * len(train_loader), end=1e-5)
trainer = mv.Trainer(model, optim.Adam(learning_rate=schedule))
trainer.fit(train_loader, epochs=args.epochs)

# 4. Test.
result = trainer.evaluate(test_loader)
print(f"Test Accuracy: {100 * result['accuracy']:.2f}%")

# 5. Save, and load back with no model code.
path = mv.save(model, out / "digits_cnn", metadata={"classes": train_set.classes})
restored = mv.load(path)
reloaded = mv.Trainer(restored).evaluate(test_loader)["accuracy"]
print(f"Saved {path}; reloaded accuracy {100 * reloaded:.2f}%")

# 6. Deploy: a .mlxfn file runs from Python, C++ or Swift without this script.
mlxfn = export_mlxfn(restored, out / "digits_cnn", input_shape=(1, 8, 8, 1))
image, label = test_set[0]
logits = load_mlxfn(mlxfn)(image[None])
print(
    f"Exported {mlxfn}; it reads the first test image as {logits.argmax().item()} (true: {label})"
)

"""optcb in the trainers users run — Hugging Face Trainer, Lightning, accelerate: each trains a tiny model built from a
config, checkpoints with the trainer's own mechanism, and resumes to exactly the parameters of an uninterrupted run"""
import pytest, torch
from torch import nn
import optcb
from _util import slow

pytestmark = slow  # each trains a model through another library's trainer

def _equal_params(m1, m2):
    for (n, a), b in zip(m1.named_parameters(), m2.parameters()): assert torch.equal(a, b), n

def _moved(m, init):
    return any(not torch.equal(p, q) for p, q in zip(m.parameters(), init.parameters()))

# -- Hugging Face Trainer
transformers = pytest.importorskip('transformers')

def _bert():
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=60, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=32, max_position_embeddings=16, num_labels=3)
    return transformers.BertForSequenceClassification(cfg)

def _token_data(n=48, length=8):
    g = torch.Generator().manual_seed(1)
    ids, labels = torch.randint(0, 60, (n, length), generator=g), torch.randint(0, 3, (n,), generator=g)
    return [dict(input_ids=i, attention_mask=torch.ones(length, dtype=torch.long), labels=y) for i, y in zip(ids, labels)]

HF_OPTS = {
    'optim.AdamW + param_groups': lambda m: optcb.optim.AdamW(optcb.param_groups(m, wd=0.01), lr=3e-3),
    'Adam (fastai signature)': lambda m: optcb.Adam(m.parameters(), lr=3e-3),
}

@pytest.mark.parametrize('make_opt', HF_OPTS.values(), ids=HF_OPTS.keys())
def test_hugging_face_trainer_resumes_exactly(make_opt, tmp_path):
    "Trainer(optimizers=(optcb optimizer, scheduler)): 12 steps, vs 6 steps + checkpoint-6 + resume, equal bit for bit"
    data = _token_data()
    def trainer(out, model, opt, **kw):
        sched = torch.optim.lr_scheduler.LinearLR(opt, start_factor=1., end_factor=0.1, total_iters=12)
        args = transformers.TrainingArguments(output_dir=str(out), max_steps=12, per_device_train_batch_size=8,
                                              save_strategy='steps', save_steps=6, logging_strategy='no',
                                              report_to='none', use_cpu=True, seed=0, disable_tqdm=True, **kw)
        return transformers.Trainer(model=model, args=args, train_dataset=data, optimizers=(opt, sched))
    full = _bert(); init = _bert()
    trainer(tmp_path / 'full', full, make_opt(full)).train()
    assert (tmp_path / 'full' / 'checkpoint-6' / 'optimizer.pt').exists() and _moved(full, init)
    resumed = _bert()
    trainer(tmp_path / 'resumed', resumed, make_opt(resumed)).train(
        resume_from_checkpoint=str(tmp_path / 'full' / 'checkpoint-6'))
    _equal_params(full, resumed)

# -- Lightning
L = pytest.importorskip('lightning')

class _Regressor(L.LightningModule):
    "A small MLP; its optimizer is optcb's AdamW with OneCycleLR stepping every optimizer step, cycling beta1 too"
    def __init__(self, total_steps):
        super().__init__()
        torch.manual_seed(0)
        self.net, self.total_steps = nn.Sequential(nn.Linear(5, 16), nn.GELU(), nn.Linear(16, 1)), total_steps
        self.betas = []
    def training_step(self, batch, i):
        x, y = batch
        return nn.functional.mse_loss(self.net(x), y)
    def on_before_optimizer_step(self, optimizer): self.betas.append(optimizer.param_groups[0]['betas'][0])
    def configure_optimizers(self):
        opt = optcb.optim.AdamW(optcb.param_groups(self.net, wd=0.05), lr=1e-2)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-2, total_steps=self.total_steps)
        return {'optimizer': opt, 'lr_scheduler': {'scheduler': sched, 'interval': 'step'}}

def _regression_loader():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(64, 5, generator=g)
    y = x @ torch.randn(5, 1, generator=g) + 0.1 * torch.randn(64, 1, generator=g)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)

@pytest.mark.parametrize('accumulate', [1, 2])
def test_lightning_resumes_exactly_with_a_per_step_one_cycle(accumulate, tmp_path):
    "configure_optimizers returns optcb's optimizer: 4 epochs, vs 2 epochs + checkpoint + 2 more, equal bit for bit"
    steps = 4 * 8 // accumulate
    def trainer(epochs, root):
        return L.Trainer(max_epochs=epochs, accumulate_grad_batches=accumulate, accelerator='cpu', logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=str(root))  # no deterministic=True: torch's test database froze the flags
    full = _Regressor(steps); init = _Regressor(steps)
    trainer(4, tmp_path).fit(full, _regression_loader())
    assert _moved(full, init) and len(full.betas) == steps and len(set(full.betas)) > 2  # beta1 cycled
    half = _Regressor(steps); t = trainer(2, tmp_path); t.fit(half, _regression_loader())
    t.save_checkpoint(tmp_path / 'half.ckpt')
    resumed = _Regressor(steps)
    trainer(4, tmp_path).fit(resumed, _regression_loader(), ckpt_path=str(tmp_path / 'half.ckpt'))
    _equal_params(full, resumed)
    assert resumed.betas == full.betas[steps // 2:]

# -- accelerate
accelerate = pytest.importorskip('accelerate')

def test_accelerate_prepare_and_resume_exactly(tmp_path):
    "Accelerator.prepare wraps optcb's optimizer; save_state at step 4 and load_state into fresh objects: equal"
    def setup():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(5, 16), nn.GELU(), nn.Linear(16, 1))
        opt = optcb.Adam(model.parameters(), lr=1e-2, wd=0.01)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=8)
        acc = accelerate.Accelerator(cpu=True)
        return acc, *acc.prepare(model, opt, _regression_loader(), sched)
    def train(acc, model, opt, dl, sched, skip=0, stop=None):
        for i, (x, y) in enumerate(acc.skip_first_batches(dl, skip) if skip else dl, start=skip):
            if i == stop: return
            loss = nn.functional.mse_loss(model(x), y)
            opt.zero_grad(); acc.backward(loss); opt.step(); sched.step()
    acc, *full = setup()
    train(acc, *full)
    acc, *half = setup(); train(acc, *half, stop=4); acc.save_state(str(tmp_path / 'state'))
    assert (tmp_path / 'state' / 'optimizer.bin').exists()
    acc, *resumed = setup(); acc.load_state(str(tmp_path / 'state'))
    assert resumed[3].scheduler.last_epoch == 4 and resumed[1].optimizer.state_dict()['state']
    train(acc, *resumed, skip=4)
    _equal_params(full[0], resumed[0])
    assert _moved(full[0], half[0])  # the second half did something

import torch

from compression.pq.kmeans import assign, index_entropy_bits, kmeans, kmeans_python_loop


def planted(clusters: int = 16, per_cluster: int = 40, dim: int = 8, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(clusters, dim, generator=generator) * 5
    labels = torch.arange(clusters).repeat_interleave(per_cluster)
    points = centres[labels] + 0.05 * torch.randn(len(labels), dim, generator=generator)
    return points, labels, centres


def test_recovers_planted_clusters():
    points, labels, centres = planted()
    result = kmeans(points, 16, iterations=10, seed=3)
    # Every true cluster maps to exactly one centroid, and each centroid sits on its cluster's centre.
    for cluster in range(16):
        found = result.assignments[labels == cluster].unique()
        assert len(found) == 1
        assert torch.dist(result.centroids[found[0]], centres[cluster]) < 0.05
    assert len(result.assignments.unique()) == 16
    assert result.inertia / len(points) < 8 * 0.05**2 * 1.5


def test_empty_clusters_are_split_from_the_largest():
    # Two distinct points repeated: k-means++ can only place 2 distinct centroids among 4, so duplicates end up
    # empty and must take members from the largest cluster.
    points = torch.cat([torch.zeros(60, 4), torch.ones(40, 4)])
    result = kmeans(points, 4, iterations=5, seed=0)
    assert bool((result.counts > 0).all())
    assert int(result.counts.sum()) == 100
    assert result.inertia == 0.0


def test_same_seed_same_result_and_other_seed_differs():
    points = torch.randn(2000, 4, generator=torch.Generator().manual_seed(1))
    first, second = kmeans(points, 32, seed=7), kmeans(points, 32, seed=7)
    assert torch.equal(first.centroids, second.centroids)
    assert torch.equal(first.assignments, second.assignments)
    assert not torch.equal(first.centroids, kmeans(points, 32, seed=8).centroids)


def test_chunked_assignment_equals_unchunked():
    points = torch.randn(5000, 9, generator=torch.Generator().manual_seed(2))
    centroids = points[:256].clone()
    whole, whole_distance = assign(points, centroids, max_chunk_bytes=1 << 30)
    chunked, chunked_distance = assign(points, centroids, max_chunk_bytes=4 * 256 * 37)  # 37 rows per chunk
    assert torch.equal(whole, chunked)
    assert torch.allclose(whole_distance, chunked_distance)
    brute = torch.cdist(points.double(), centroids.double()).argmin(1)
    assert (brute == whole).float().mean() > 0.999  # float32 vs float64 may differ only on near-ties


def test_vectorised_matches_python_loop_objective():
    points, _, _ = planted(clusters=8, per_cluster=20, dim=4)
    fast, slow = kmeans(points, 8, iterations=5, seed=0), kmeans_python_loop(points, 8, iterations=5, seed=0)
    assert abs(fast.inertia - slow.inertia) <= 1e-3 * max(1.0, slow.inertia)


def test_weighted_kmeans_fits_the_heavily_weighted_column_far_better():
    points = torch.randn(4096, 4, generator=torch.Generator().manual_seed(0))
    weights = torch.ones_like(points)
    weights[:, 0] = 100.0  # the input that column 0 multiplies is 10x larger than the others
    plain, weighted = kmeans(points, 16, iterations=10, seed=0), kmeans(points, 16, iterations=10, seed=0,
                                                                        weights=weights)

    def column_error(result, column):
        return float((points - result.centroids[result.assignments])[:, column].pow(2).mean())

    assert column_error(weighted, 0) < 0.3 * column_error(plain, 0)
    assert (weighted.counts > 0).all()


def test_assignment_with_costs_trades_distance_for_a_cheaper_codeword_and_reports_the_true_distance():
    centroids = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    rows = torch.tensor([[0.4, 0.0], [0.9, 0.0]])
    index, distance = assign(rows, centroids)
    assert index.tolist() == [0, 1]
    # codeword 1 costs 0.5 less than codeword 0: [0.4, 0] pays 0.16 at codeword 0, 0.36 - 0.5 at codeword 1
    index, distance = assign(rows, centroids, costs=torch.tensor([0.5, 0.0]))
    assert index.tolist() == [1, 1]
    assert torch.allclose(distance, torch.tensor([0.36, 0.01]))
    weights = torch.ones_like(rows)  # the weighted path prices codewords the same way
    assert assign(rows, centroids, weights=weights, costs=torch.tensor([0.5, 0.0]))[0].tolist() == [1, 1]


def test_entropy_constrained_kmeans_lowers_the_index_entropy_for_a_little_error():
    torch.manual_seed(0)
    blocks = torch.distributions.Laplace(0.0, 1.0).sample((20000, 4))  # heavy-tailed, like pretrained weights
    plain = kmeans(blocks, 64, iterations=12, seed=0)
    constrained = kmeans(blocks, 64, iterations=12, seed=0, rate_weight=0.2)
    plain_bits, constrained_bits = index_entropy_bits(plain.counts), index_entropy_bits(constrained.counts)
    assert plain_bits > 5.5 and bool((plain.counts > 0).all())  # plain k-means uses its 64 codewords nearly evenly
    assert constrained_bits < plain_bits - 0.2
    assert constrained.inertia < plain.inertia * 1.25
    assert index_entropy_bits(torch.tensor([5, 5, 5, 5])) == 2.0 and index_entropy_bits(torch.tensor([7, 0])) == 0.0

"""The long-lived clients one API process shares, built once by the app factory."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from minio import Minio

from productimport.api.auth import Authenticator, KubernetesAuth, StaticTokenAuth
from productimport.api.catalogread import CatalogReader
from productimport.api.metrics import ApiMetrics
from productimport.api.oidc import with_oidc
from productimport.api.resources import ProductImports
from productimport.api.settings import ApiSettings, AuthMode
from productimport.api.storage import make_minio


@dataclass
class Services:
    settings: ApiSettings
    minio: Minio
    imports: ProductImports
    auth: Authenticator
    metrics: ApiMetrics
    # Threads that send upload parts to MinIO (never the event loop).
    part_pool: ThreadPoolExecutor

    def close(self) -> None:
        self.part_pool.shutdown(wait=False, cancel_futures=True)


def make_kube_client(settings: ApiSettings) -> k8s.ApiClient:
    if settings.kubeconfig:
        return k8s_config.new_client_from_config(config_file=settings.kubeconfig)
    configuration = k8s.Configuration()
    k8s_config.load_incluster_config(client_configuration=configuration)
    return k8s.ApiClient(configuration)


def build_services(settings: ApiSettings, metrics: ApiMetrics | None = None) -> Services:
    kube = make_kube_client(settings)
    metrics = metrics or ApiMetrics()
    auth: Authenticator
    if settings.auth_mode == AuthMode.kubernetes:
        audiences = [a.strip() for a in settings.token_audiences.split(",") if a.strip()]
        auth = KubernetesAuth(
            kube,
            audiences,
            review_rate=settings.token_review_rate,
            review_burst=settings.token_review_burst,
            metrics=metrics,
        )
    else:
        auth = StaticTokenAuth.from_sources(settings.tokens_file, settings.tokens)
    # Bearer tokens of an OpenID Connect issuer, next to either mode (docs/api.md).
    auth = with_oidc(auth, settings, kube, metrics)
    return Services(
        settings=settings,
        minio=make_minio(settings),
        imports=ProductImports(kube),
        auth=auth,
        metrics=metrics,
        part_pool=ThreadPoolExecutor(max_workers=16, thread_name_prefix="upload-part"),
    )


def services(request: Request) -> Services:
    return request.app.state.services


def catalog_reader(request: Request) -> CatalogReader:
    """The app's one reader (its snapshot cache is shared by every request)."""
    return request.app.state.catalogs


Catalogs = Annotated[CatalogReader, Depends(catalog_reader)]

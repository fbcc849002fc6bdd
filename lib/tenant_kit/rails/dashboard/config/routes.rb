# frozen_string_literal: true

TenantKit::Rails::Dashboard::Engine.routes.draw do
  name = { name: %r{[^/]+} }
  root to: "jobs#index"
  resources :jobs, only: %i[index show] do
    get :progress, on: :member, defaults: { format: :json }
  end
  post "backups", to: "backups#create", as: :backups
  get "archives", to: "archives#index", as: :archives
  scope "archives/:name", constraints: name, format: false do
    get "", to: "archives#show", as: :archive
    get "download", to: "archives#download", as: :download_archive
    post "verify", to: "archives#verify", as: :verify_archive
    post "dry_run", to: "archives#dry_run", as: :dry_run_archive
    post "restore", to: "archives#restore", as: :restore_archive
  end
  get "assets/:name", to: "assets#show", as: :dashboard_asset, constraints: { name: /dashboard\.(css|js)/ }, format: false
end

# frozen_string_literal: true

require_relative "application"
TenantKitDummy::Application.initialize!
